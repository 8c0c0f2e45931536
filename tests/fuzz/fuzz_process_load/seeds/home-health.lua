-- A home-health visit: arrive, explain the HIPAA privacy notice and have the patient
-- acknowledge and sign it on the phone, take vitals, escalate when they are out of range,
-- and ask the patient how the visit went.
local PHOTO = "sha256:" .. string.rep("e", 64)

-- Vitals that should make the aide call the nurse line before anything else.
local function needs_escalation(v)
  return v.temperature_c >= 38.0 or (v.spo2 ~= nil and v.spo2 < 92) or v.systolic >= 180
end

return process {
  name = "home-health",
  title = "Home-health visit",
  goals = { ["visit-complete"] = "Visit documented and signed by the patient" },
  content = {
    ["hipaa-notice"] = { kind = "document", title = "Notice of Privacy Practices",
                         uri = "https://cdn.example/hipaa-notice-2024-03.pdf", version = "2024-03" },
    ["privacy-script"] = { kind = "text", title = "How to explain the notice",
                           text = "This notice explains who can see your health information and how to ask for a copy." },
    ["hand-hygiene"] = { kind = "video", title = "Hand hygiene in 60 seconds", uri = "https://cdn.example/hygiene.mp4" },
  },
  run = function(visit)
    visit:step {
      id = "arrive", title = "Arrive and confirm identity",
      say = "Hello, I'm " .. visit.contractor.name .. " from CareWell, here for your home visit.",
      help = "Ask for the patient's date of birth and compare it with the visit sheet.",
      show = { "hand-hygiene" },
      fields = {
        field.location { name = "arrival", label = "Arrival location", required = true, max = 100 },
        field.boolean  { name = "identity_confirmed", label = "Patient identity confirmed?", required = true },
      },
      validate = function(d)
        if not d.identity_confirmed then
          return "Do not start the visit until the patient's identity is confirmed; call the office if it does not match"
        end
      end,
    }
    visit:step {
      id = "privacy", title = "Privacy notice", audience = "customer",
      say = "Please read this notice about your health information, then confirm and sign below.",
      show = { "privacy-script" },
      fields = {
        field.ack { name = "privacy_ack", label = "I have received the Notice of Privacy Practices",
                    document = "hipaa-notice", required = true },
        field.text { name = "signed_by", label = "Name of the person signing", required = true,
                     max_length = 80, pii = true },
        field.choice { name = "relationship", label = "Relationship to the patient", required = true,
                       options = { "patient", "guardian", "caregiver" } },
        field.signature { name = "patient_signature", label = "Signature", required = true, pii = true },
      },
    }
    local v = visit:step {
      id = "vitals", title = "Vitals",
      help = "Take the temperature first, then pulse, blood pressure and oxygen.",
      fields = {
        field.number  { name = "temperature_c", label = "Temperature (°C)", required = true, min = 34, max = 43 },
        field.integer { name = "heart_rate", label = "Heart rate (beats per minute)", required = true, min = 30, max = 220 },
        field.integer { name = "systolic", label = "Blood pressure, upper number", required = true, min = 60, max = 250 },
        field.integer { name = "diastolic", label = "Blood pressure, lower number", required = true, min = 30, max = 150 },
        field.integer { name = "spo2", label = "Oxygen saturation (%)", min = 50, max = 100 },
      },
      validate = function(d)
        if d.diastolic >= d.systolic then
          return { diastolic = "The lower number must be below the upper number; measure again" }
        end
      end,
    }
    if needs_escalation(v) then
      local e = visit:step {
        id = "escalate", title = "Call the nurse line now",
        say = "I'm going to call our nurse to check these numbers with you.",
        help = "Call 1-800-555-0100 and read the vitals out loud.",
        fields = {
          field.choice { name = "action", label = "What did the nurse advise?", required = true,
                         options = { "continue visit", "clinic today", "called 911" } },
          field.text { name = "nurse_name", label = "Nurse's name", required = true, max_length = 60 },
        },
      }
      if e.action == "called 911" then
        visit:outcome("emergency")
        return
      end
    end
    visit:step {
      id = "symptoms", title = "Symptoms and medication",
      fields = {
        field.multi { name = "symptoms", label = "Symptoms reported",
                      options = { "pain", "dizziness", "shortness of breath", "swelling", "none" }, min = 1, max = 3 },
        field.date { name = "last_dose", label = "Date of the last dose", min = "2020-01-01" },
        field.photo { name = "medication_photo", label = "Photo of the medication list" },
      },
      validate = function(d)
        if d.symptoms and #d.symptoms > 1 then
          for _, s in ipairs(d.symptoms) do
            if s == "none" then return { symptoms = "Choose 'none' on its own, or only the symptoms" } end
          end
        end
      end,
    }
    visit:step {
      id = "feedback", title = "How was your visit?", audience = "customer",
      say = "Please rate today's visit. Your answer goes to CareWell, not to your aide.",
      fields = {
        field.rating { name = "satisfaction", label = "Your rating", required = true },
        field.text { name = "comment", label = "Anything to add?", max_length = 500 },
      },
    }
    visit:outcome("visit-complete")
  end,
  tests = {
    ["a routine visit"] = {
      customer = { name = "Grace" },
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace Hopper", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 36.8, heart_rate = 72, systolic = 120, diastolic = 80, spo2 = 98 },
        symptoms = { symptoms = { "none" }, last_dose = "2024-05-30", medication_photo = PHOTO },
        feedback = { satisfaction = 5 },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "symptoms", "feedback" }, outcome = "visit-complete" },
    },
    ["fever escalates to the nurse"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 30 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Ann", relationship = "guardian", patient_signature = PHOTO },
        vitals = { temperature_c = 38.6, heart_rate = 101, systolic = 130, diastolic = 85 },
        escalate = { action = "continue visit", nurse_name = "Nurse Joy" },
        symptoms = { symptoms = { "pain", "swelling" } },
        feedback = { satisfaction = 4, comment = "Kind and quick." },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "escalate", "symptoms", "feedback" }, outcome = "visit-complete" },
    },
    ["low oxygen ends in an emergency call"] = {
      answers = {
        arrive = { arrival = { lat = 40.0, lon = -75.0, accuracy = 5 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Ann", relationship = "caregiver", patient_signature = PHOTO },
        vitals = { temperature_c = 36.5, heart_rate = 120, systolic = 110, diastolic = 70, spo2 = 85 },
        escalate = { action = "called 911", nurse_name = "Nurse Joy" },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "escalate" }, outcome = "emergency" },
    },
    ["identity not confirmed"] = {
      answers = { arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = false } },
      expect = { steps = { "arrive" }, rejected = { arrive = { "_step" } } },
    },
    ["imprecise or missing location"] = {
      answers = { arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 500 } } },
      expect = { steps = { "arrive" }, rejected = { arrive = { "arrival", "identity_confirmed" } } },
    },
    ["privacy notice not acknowledged"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = false, relationship = "neighbour" },
      },
      expect = { steps = { "arrive", "privacy" },
                 rejected = { privacy = { "privacy_ack", "signed_by", "relationship", "patient_signature" } } },
    },
    ["vitals out of range"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 45, heart_rate = 72.5, systolic = 300, diastolic = 10, spo2 = 101 },
      },
      expect = { steps = { "arrive", "privacy", "vitals" },
                 rejected = { vitals = { "temperature_c", "heart_rate", "systolic", "diastolic", "spo2" } } },
    },
    ["blood pressure numbers swapped"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 36.6, heart_rate = 70, systolic = 80, diastolic = 120 },
      },
      expect = { steps = { "arrive", "privacy", "vitals" }, rejected = { vitals = { "diastolic" } } },
    },
    ["symptom list checks"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 36.6, heart_rate = 70, systolic = 120, diastolic = 80 },
        symptoms = { symptoms = { "pain", "fever" }, last_dose = "yesterday", medication_photo = "photo.jpg" },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "symptoms" },
                 rejected = { symptoms = { "symptoms", "last_dose", "medication_photo" } } },
    },
    ["none is chosen alone"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 36.6, heart_rate = 70, systolic = 120, diastolic = 80 },
        symptoms = { symptoms = { "pain", "none" } },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "symptoms" }, rejected = { symptoms = { "symptoms" } } },
    },
    ["rating is required"] = {
      answers = {
        arrive = { arrival = { lat = 37.77, lon = -122.41, accuracy = 12 }, identity_confirmed = true },
        privacy = { privacy_ack = true, signed_by = "Grace", relationship = "patient", patient_signature = PHOTO },
        vitals = { temperature_c = 36.6, heart_rate = 70, systolic = 120, diastolic = 80 },
        symptoms = { symptoms = { "dizziness" } },
        feedback = { comment = "ok" },
      },
      expect = { steps = { "arrive", "privacy", "vitals", "symptoms", "feedback" }, rejected = { feedback = { "satisfaction" } } },
    },
  },
}
