---@meta
-- Language-server annotations for handsel's process DSL (SPEC §3). This file is never run:
-- it tells the Lua language server (LuaLS / sumneko) what `process`, `field` and `visit`
-- are, so an editor can complete names and check types. See processes/README.md.

---@alias handsel.ContentKind "video"|"pdf"|"image"|"document"|"text"
---@alias handsel.Audience "contractor"|"customer"

---Something the brand may show or suggest: a video, a PDF, an image, a document to
---acknowledge, or a talking point (kind "text").
---@class handsel.Content
---@field kind handsel.ContentKind
---@field title string
---@field uri? string Required for every kind but "text".
---@field text? string The words of a talking point (kind "text").
---@field version? string Which version of a document is shown; recorded with every `ack`.
---@field prior? handsel.Prior What the brand believes of the item before any visit (for `visit:suggest`).

---A brand's belief in a content item before any visit: as if it had been suggested
---`successes + failures` times and `successes` of those visits had succeeded. Two numbers from
---0 to 10000: `{ 3, 1 }` or `{ successes = 3, failures = 1 }`.
---@alias handsel.Prior number[]|{ successes: number, failures: number }

---Options every field takes.
---@class handsel.FieldOptions
---@field name string Lower-case letters, digits and `_`; the key in the step's data.
---@field label? string What the contractor sees; also names the field in error messages.
---@field hint? string Help shown under the field, and after a `pattern` error.
---@field required? boolean The step cannot be completed without it.
---@field pii? boolean Personal data: redacted in exports unless the reader may see it.

---@class handsel.TextOptions: handsel.FieldOptions
---@field max_length? integer Characters (not bytes); 10000 when not given.
---@field pattern? string A Lua pattern the whole value must match, e.g. "%d%d%d%d%d".

---@class handsel.NumberOptions: handsel.FieldOptions
---@field min? number
---@field max? number

---@class handsel.IntegerOptions: handsel.FieldOptions
---@field min? integer
---@field max? integer

---@class handsel.ChoiceOptions: handsel.FieldOptions
---@field options string[] The values the contractor can choose from.

---@class handsel.MultiOptions: handsel.ChoiceOptions
---@field min? integer The fewest choices.
---@field max? integer The most choices.

---@class handsel.DateOptions: handsel.FieldOptions
---@field min? string Earliest date, "YYYY-MM-DD".
---@field max? string Latest date, "YYYY-MM-DD".

---@class handsel.AckOptions: handsel.FieldOptions
---@field document string The id of a `document` content item; it is shown with the step.

---@class handsel.LocationOptions: handsel.FieldOptions
---@field max? number The worst GPS accuracy accepted, in meters.

---A field made by one of the `field.*` constructors.
---@class handsel.Field
---@field type string
---@field name string

---The field constructors.
---@class handsel.FieldLib
field = {}

---Free text (a string).
---@param o handsel.TextOptions
---@return handsel.Field
function field.text(o) end

---A whole number (an integer in the data).
---@param o handsel.IntegerOptions
---@return handsel.Field
function field.integer(o) end

---A number.
---@param o handsel.NumberOptions
---@return handsel.Field
function field.number(o) end

---Yes or no (a boolean).
---@param o handsel.FieldOptions
---@return handsel.Field
function field.boolean(o) end

---One of `options` (a string).
---@param o handsel.ChoiceOptions
---@return handsel.Field
function field.choice(o) end

---Several of `options` (a list of strings, no repeats).
---@param o handsel.MultiOptions
---@return handsel.Field
function field.multi(o) end

---A calendar date, "YYYY-MM-DD" (a string).
---@param o handsel.DateOptions
---@return handsel.Field
function field.date(o) end

---A photo uploaded from the app: "sha256:<64 hex digits>".
---@param o handsel.FieldOptions
---@return handsel.Field
function field.photo(o) end

---A signature captured in the app: "sha256:<64 hex digits>".
---@param o handsel.FieldOptions
---@return handsel.Field
function field.signature(o) end

---Acknowledges a `document` content item (true); the record keeps the document's version.
---@param o handsel.AckOptions
---@return handsel.Field
function field.ack(o) end

---The phone's GPS position: { lat, lon, accuracy }.
---@param o handsel.LocationOptions
---@return handsel.Field
function field.location(o) end

---A rating from 1 to 5 (an integer).
---@param o handsel.FieldOptions
---@return handsel.Field
function field.rating(o) end

---The data of a completed step, by field name. Optional fields left empty are nil.
---@alias handsel.Data table<string, any>

---What `validate` returns: nothing when the data is fine, a message for the step as a
---whole, or a message per field written for the contractor ("Roofs over 25 years need an
---inspection first").
---@alias handsel.Verdict nil|string|table<string, string>

---@class handsel.Step
---@field id string Names the step in tests and records; may repeat in a loop.
---@field title? string Defaults to the id.
---@field say? string The words to say.
---@field help? string Coaching for the contractor.
---@field audience? handsel.Audience "customer" hands the phone to the customer.
---@field show? string|string[] Content ids to show (e.g. what `visit:suggest` returned).
---@field fields? handsel.Field[] In the order the device shows them.
---@field validate? fun(data: handsel.Data, visit: handsel.Visit): handsel.Verdict Runs after the built-in checks pass.

---@class handsel.Person
---@field id? string
---@field name? string

---@class handsel.Suggest
---@field slot string Names the choice being made, e.g. "financing"; each slot learns on its own.
---@field from string[] Content ids to choose from (at most 64).
---@field count? integer How many to pick (1 by default).
---@field context? string What the script knows that may change what works (a customer segment from earlier answers); each context learns on its own. 1 to 64 characters.

---One session: the script's handle on the visit in progress.
---@class handsel.Visit
---@field customer handsel.Person|table
---@field contractor handsel.Person
---@field session string The session's id.
local Visit = {}

---Shows a step and waits until it is completed; returns the validated data.
---@param spec handsel.Step
---@return handsel.Data
function Visit:step(spec) end

---Picks content for a slot, learning from outcomes: mostly what has led to the process's
---`goals` (or to customer ratings of 4 or 5) most often for this slot and context, sometimes
---something else to keep learning. The pick is recorded, so a replay returns the same; offline
---(`handsel test`) only the items' priors count.
---@param spec handsel.Suggest
---@return string[]
function Visit:suggest(spec) end

---Records a named result of the visit (`goals` says which count as success).
---@param name string
---@param value? any
function Visit:outcome(name, value) end

---The time of the latest recorded event, in seconds since the Unix epoch (deterministic).
---@return integer
function Visit:now() end

---A scenario for `handsel test`.
---@class handsel.Scenario
---@field customer? table
---@field contractor? handsel.Person
---@field answers table<string, handsel.Data|handsel.Data[]|fun(step: table): handsel.Data> By step id; a list for a step that repeats.
---@field expect? { steps?: string[], outcome?: string|false, rejected?: table<string, string[]> }

---@class handsel.Process
---@field name string [a-z0-9][a-z0-9-]{0,63}
---@field title string
---@field goals? table<string, string> Outcomes that count as success, with what they mean.
---@field content? table<string, handsel.Content>
---@field run fun(visit: handsel.Visit)
---@field tests? table<string, handsel.Scenario>

---Declares the process; a process file ends with `return process { ... }`.
---@param def handsel.Process
---@return handsel.Process
function process(def) end
