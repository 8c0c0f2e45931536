-- An in-home solar consultation: greet, check the roof and the power bill, suggest a way to
-- pay, and record whether the customer signed.
return process {
  name = "solar-consult",
  title = "In-home solar consultation",
  goals = { sale = "Signed agreement" },
  content = {
    ["intro-card"]  = { kind = "image", title = "Who we are", uri = "https://cdn.example/intro.png" },
    -- prior: the brand's belief before any visit, as if shown 4 times with 3 sales.
    ["loan-video"]  = { kind = "video", title = "Solar loans in 90 seconds", uri = "https://cdn.example/loan.mp4",
                        prior = { successes = 3, failures = 1 } },
    ["lease-sheet"] = { kind = "pdf",   title = "Lease or buy?", uri = "https://cdn.example/lease.pdf" },
    ["savings"]     = { kind = "text",  title = "Savings talking point",
                        text = "Most homes like this one save 20 to 40 percent on power." },
  },
  run = function(visit)
    visit:step {
      id = "greet", title = "Introduce yourself",
      say = "Hi " .. (visit.customer.name or "there") .. ", I'm " .. visit.contractor.name .. " with SunCo.",
      help = "Show your badge before you enter the home.",
      show = { "intro-card" },
      fields = { field.boolean { name = "badge_shown", label = "Badge shown?", required = true } },
      validate = function(d)
        if not d.badge_shown then
          return { badge_shown = "Show your SunCo badge to the customer before going on" }
        end
      end,
    }
    local roof = visit:step {
      id = "roof", title = "Roof check",
      help = "Look at the roof from the street and take one photo of the side facing south.",
      fields = {
        field.integer { name = "roof_age", label = "Roof age (years)", required = true, min = 0, max = 120 },
        field.choice  { name = "roof_type", label = "Roof type", options = { "shingle", "tile", "metal", "flat" }, required = true },
        field.photo   { name = "roof_photo", label = "Roof photo", required = true },
      },
      validate = function(d)
        if d.roof_age > 25 then return { roof_age = "Roofs over 25 years need an inspection first" } end
      end,
    }
    if roof.roof_type == "flat" then
      visit:step {
        id = "flat-roof", title = "Flat roof: book a site survey",
        say = "Flat roofs need racking; our engineer will visit to measure.",
        fields = { field.date { name = "survey_date", label = "Survey date", required = true,
                                min = "2023-01-01", max = "2030-12-31" } },
      }
      visit:outcome("survey")
      return
    end
    local bill = visit:step {
      id = "bill", title = "Power bill",
      say = "What do you pay for power in a typical month?",
      show = { "savings" },
      fields = {
        field.number { name = "monthly_bill", label = "Monthly bill ($)", required = true, min = 0, max = 5000 },
        field.text   { name = "utility", label = "Utility company", max_length = 60 },
        field.text   { name = "zip", label = "ZIP code", pattern = "%d%d%d%d%d", hint = "five digits", pii = true },
      },
    }
    if bill.monthly_bill < 50 then
      visit:step {
        id = "low-bill", title = "Low bill",
        say = "With a bill this low, solar would not pay for itself. Thank the customer.",
        fields = { field.rating { name = "visit_rating", label = "How did the visit go?" } },
      }
      visit:outcome("not-a-fit", { bill = bill.monthly_bill })
      return
    end
    -- The server learns which pitch leads to a sale, separately for high and ordinary bills.
    local pitch = visit:suggest { slot = "financing", from = { "loan-video", "lease-sheet" },
                                  context = bill.monthly_bill >= 150 and "high-bill" or "ordinary-bill" }
    local d = visit:step {
      id = "decision", title = "Financing", show = pitch,
      say = "Here is how other customers pay for their panels.",
      fields = {
        field.choice { name = "choice", label = "Customer's choice", options = { "loan", "lease", "cash", "none" }, required = true },
        field.signature { name = "agreement", label = "Customer signature" },
      },
      validate = function(d)
        if d.choice ~= "none" and not d.agreement then
          return { agreement = "Have the customer sign the agreement for a " .. d.choice }
        end
      end,
    }
    -- A rating of 4 or 5 here counts as customer feedback, and as a success for the pitch.
    visit:step {
      id = "rate-visit", title = "How was your visit?", audience = "customer",
      say = "Please hand the phone to the customer.",
      fields = { field.rating { name = "stars", label = "Your rating" } },
    }
    if d.choice ~= "none" then visit:outcome("sale", d.choice) else visit:outcome("no-sale") end
  end,
  tests = {
    ["a loan sale"] = {
      customer = { name = "Ada" },
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 10, roof_type = "shingle", roof_photo = "sha256:" .. string.rep("a", 64) },
                  bill = { monthly_bill = 180, utility = "PG&E", zip = "94110" },
                  decision = { choice = "loan", agreement = "sha256:" .. string.rep("b", 64) },
                  ["rate-visit"] = { stars = 5 } },
      expect = { steps = { "greet", "roof", "bill", "decision", "rate-visit" }, outcome = "sale" },
    },
    ["no sale"] = {
      customer = { name = "Bo" },
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 3, roof_type = "tile", roof_photo = "sha256:" .. string.rep("c", 64) },
                  bill = { monthly_bill = 95.5 },
                  decision = { choice = "none" },
                  ["rate-visit"] = {} },
      expect = { steps = { "greet", "roof", "bill", "decision", "rate-visit" }, outcome = "no-sale" },
    },
    ["badge not shown"] = {
      answers = { greet = { badge_shown = false } },
      expect = { steps = { "greet" }, rejected = { greet = { "badge_shown" } } },
    },
    ["old roof needs inspection"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 30, roof_type = "shingle", roof_photo = "sha256:" .. string.rep("a", 64) } },
      expect = { steps = { "greet", "roof" }, rejected = { roof = { "roof_age" } } },
    },
    ["roof answers out of range"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 200, roof_type = "straw", roof_photo = "not a photo" } },
      expect = { steps = { "greet", "roof" }, rejected = { roof = { "roof_age", "roof_type", "roof_photo" } } },
    },
    ["flat roof books a survey"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 5, roof_type = "flat", roof_photo = "sha256:" .. string.rep("d", 64) },
                  ["flat-roof"] = { survey_date = "2024-02-29" } },
      expect = { steps = { "greet", "roof", "flat-roof" }, outcome = "survey" },
    },
    ["survey date must be real"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 5, roof_type = "flat", roof_photo = "sha256:" .. string.rep("d", 64) },
                  ["flat-roof"] = { survey_date = "2023-02-29" } },
      expect = { steps = { "greet", "roof", "flat-roof" }, rejected = { ["flat-roof"] = { "survey_date" } } },
    },
    ["bill checks"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 5, roof_type = "metal", roof_photo = "sha256:" .. string.rep("d", 64) },
                  bill = { monthly_bill = -3, zip = "9411", utility = string.rep("x", 61), meter = 4 } },
      expect = { steps = { "greet", "roof", "bill" },
                 rejected = { bill = { "monthly_bill", "zip", "utility", "meter" } } },
    },
    ["low bill is not a fit"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 5, roof_type = "metal", roof_photo = "sha256:" .. string.rep("d", 64) },
                  bill = { monthly_bill = 30 },
                  ["low-bill"] = { visit_rating = 4 } },
      expect = { steps = { "greet", "roof", "bill", "low-bill" }, outcome = "not-a-fit" },
    },
    ["rating must be 1 to 5"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 5, roof_type = "metal", roof_photo = "sha256:" .. string.rep("d", 64) },
                  bill = { monthly_bill = 30 },
                  ["low-bill"] = { visit_rating = 6 } },
      expect = { steps = { "greet", "roof", "bill", "low-bill" }, rejected = { ["low-bill"] = { "visit_rating" } } },
    },
    ["a sale needs a signature"] = {
      answers = { greet = { badge_shown = true },
                  roof = { roof_age = 10, roof_type = "shingle", roof_photo = "sha256:" .. string.rep("a", 64) },
                  bill = { monthly_bill = 180 },
                  decision = { choice = "lease" } },
      expect = { steps = { "greet", "roof", "bill", "decision" }, rejected = { decision = { "agreement" } } },
    },
  },
}
