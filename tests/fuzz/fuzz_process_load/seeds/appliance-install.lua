-- An appliance installation: photo evidence before and after, the model's serial number, and
-- a safety checklist that comes back until every item passes (or the job is escalated).
local MAX_CHECKS = 3

local CHECKS = {
  { name = "gas_leak_test", label = "Gas connections leak-tested (soap test, no bubbles)" },
  { name = "level", label = "Appliance level front to back and side to side" },
  { name = "clearance", label = "Clearances from the manual respected" },
  { name = "power_test", label = "Powered on and ran one short cycle" },
}

local function checklist_fields()
  local fields = {}
  for i, c in ipairs(CHECKS) do
    fields[i] = field.boolean { name = c.name, label = c.label, required = true }
  end
  fields[#fields + 1] = field.text { name = "notes", label = "Notes", max_length = 300 }
  return fields
end

return process {
  name = "appliance-install",
  title = "Appliance installation",
  goals = { installed = "Installed, safety-checked and signed off" },
  content = {
    ["gas-safety"] = { kind = "pdf", title = "Gas safety checklist", uri = "https://cdn.example/gas-safety.pdf" },
    ["level-howto"] = { kind = "video", title = "Leveling an appliance", uri = "https://cdn.example/level.mp4" },
    ["care-card"] = { kind = "image", title = "Care instructions", uri = "https://cdn.example/care.png" },
  },
  run = function(visit)
    local job = visit:step {
      id = "before", title = "Before you start",
      help = "Photograph the space before you move anything: it protects you if there is a dispute.",
      fields = {
        field.choice { name = "appliance", label = "Appliance", required = true,
                       options = { "dishwasher", "range", "dryer", "water heater" } },
        field.photo { name = "before_photo", label = "Photo of the space before", required = true },
      },
    }
    visit:step {
      id = "install", title = "Install the " .. job.appliance,
      fields = {
        field.text { name = "serial", label = "Serial number", required = true, max_length = 20,
                     pattern = "%u%u%d%d%d%d%d+", hint = "two capital letters then at least 5 digits, as on the label" },
        field.photo { name = "installed_photo", label = "Photo of the installed appliance", required = true },
      },
    }
    local passed = false
    for attempt = 1, MAX_CHECKS do
      local c = visit:step {
        id = "safety", title = "Safety checklist (check " .. attempt .. " of " .. MAX_CHECKS .. ")",
        show = { "gas-safety" },
        fields = checklist_fields(),
      }
      local failed = {}
      for _, item in ipairs(CHECKS) do
        if not c[item.name] then failed[#failed + 1] = item.name end
      end
      if #failed == 0 then passed = true break end
      if attempt < MAX_CHECKS then
        visit:step {
          id = "fix", title = "Fix what failed",
          say = "Fix " .. table.concat(failed, ", ") .. " and then run the whole checklist again.",
          show = { "level-howto" },
          fields = {
            field.multi { name = "fixed", label = "What you fixed", options = failed, required = true, min = #failed },
            field.photo { name = "fix_photo", label = "Photo of the fix" },
          },
        }
      end
    end
    if not passed then
      visit:outcome("escalated")
      visit:step {
        id = "escalate", title = "Call the install desk",
        say = "The checklist failed " .. MAX_CHECKS .. " times: do not leave the appliance connected.",
        fields = { field.boolean { name = "disconnected", label = "Appliance disconnected and made safe?", required = true } },
        validate = function(d)
          if not d.disconnected then return { disconnected = "Disconnect the appliance before you leave" } end
        end,
      }
      return
    end
    visit:step {
      id = "handoff", title = "Sign-off", audience = "customer",
      say = "Your " .. job.appliance .. " is installed and safety-checked. Please sign to confirm.",
      show = { "care-card" },
      fields = {
        field.signature { name = "customer_signature", label = "Your signature", required = true },
        field.rating { name = "rating", label = "How did we do?" },
      },
    }
    visit:outcome("installed", job.appliance)
  end,
  tests = {
    ["passes first time"] = {
      answers = {
        before = { appliance = "range", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "AB1234567", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = { gas_leak_test = true, level = true, clearance = true, power_test = true },
        handoff = { customer_signature = "sha256:" .. string.rep("3", 64), rating = 5 },
      },
      expect = { steps = { "before", "install", "safety", "handoff" }, outcome = "installed" },
    },
    ["checklist loops until it passes"] = {
      answers = {
        before = { appliance = "dryer", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "XY99999", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = {
          { gas_leak_test = true, level = false, clearance = true, power_test = false, notes = "wobbles" },
          { gas_leak_test = true, level = true, clearance = true, power_test = true },
        },
        fix = { fixed = { "level", "power_test" } },
        handoff = { customer_signature = "sha256:" .. string.rep("3", 64) },
      },
      expect = { steps = { "before", "install", "safety", "fix", "safety", "handoff" }, outcome = "installed" },
    },
    ["three failed checks escalate"] = {
      answers = {
        before = { appliance = "water heater", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "WH123456", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = function(step)
          return { gas_leak_test = false, level = true, clearance = true, power_test = true }
        end,
        fix = { fixed = { "gas_leak_test" } },
        escalate = { disconnected = true },
      },
      expect = { steps = { "before", "install", "safety", "fix", "safety", "fix", "safety", "escalate" },
                 outcome = "escalated" },
    },
    ["escalation requires disconnecting"] = {
      answers = {
        before = { appliance = "water heater", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "WH123456", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = { gas_leak_test = false, level = true, clearance = true, power_test = true },
        fix = { fixed = { "gas_leak_test" } },
        escalate = { disconnected = false },
      },
      expect = { steps = { "before", "install", "safety", "fix", "safety", "fix", "safety", "escalate" },
                 rejected = { escalate = { "disconnected" } } },
    },
    ["photos are required"] = {
      answers = { before = { appliance = "toaster" } },
      expect = { steps = { "before" }, rejected = { before = { "appliance", "before_photo" } } },
    },
    ["serial number format"] = {
      answers = {
        before = { appliance = "dishwasher", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "ab12", installed_photo = "sha256:" .. string.rep("2", 64) },
      },
      expect = { steps = { "before", "install" }, rejected = { install = { "serial" } } },
    },
    ["every checklist item must be answered"] = {
      answers = {
        before = { appliance = "range", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "AB1234567", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = { gas_leak_test = true, level = "yes" },
      },
      expect = { steps = { "before", "install", "safety" },
                 rejected = { safety = { "level", "clearance", "power_test" } } },
    },
    ["the fix must cover every failed item"] = {
      answers = {
        before = { appliance = "range", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "AB1234567", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = { gas_leak_test = true, level = false, clearance = false, power_test = true },
        fix = { fixed = { "level", "gas_leak_test" } },
      },
      expect = { steps = { "before", "install", "safety", "fix" }, rejected = { fix = { "fixed" } } },
    },
    ["sign-off needs a signature"] = {
      answers = {
        before = { appliance = "range", before_photo = "sha256:" .. string.rep("1", 64) },
        install = { serial = "AB1234567", installed_photo = "sha256:" .. string.rep("2", 64) },
        safety = { gas_leak_test = true, level = true, clearance = true, power_test = true },
        handoff = { rating = 0 },
      },
      expect = { steps = { "before", "install", "safety", "handoff" },
                 rejected = { handoff = { "customer_signature", "rating" } } },
    },
  },
}
