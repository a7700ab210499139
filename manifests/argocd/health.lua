-- Argo CD health of projectgen's GeneratedProject and RepositoryExport, from their kstatus conditions.
--   Stalled=True                          -> Degraded (the condition's message)
--   Ready=True                            -> Healthy
--   anything else, or a stale generation  -> Progressing
-- A condition, or the status, written for an older metadata.generation says nothing about the
-- current spec: Progressing until the operator has looked at it.
local hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status

local function stale(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

if status == nil or status.observedGeneration == nil or stale(status.observedGeneration) then
  hs.status = "Progressing"
  hs.message = "Waiting for the projectgen operator to observe generation " .. tostring(generation or "")
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type ~= nil and not stale(condition.observedGeneration) then
      conditions[condition.type] = condition
    end
  end
end

local function message(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

local stalled, ready, reconciling = conditions["Stalled"], conditions["Ready"], conditions["Reconciling"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, status.errorMessage or "Stalled")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, status.phase or "Ready")
else
  hs.status = "Progressing"
  if reconciling ~= nil and reconciling.status == "True" then
    hs.message = message(reconciling, status.phase or "Reconciling")
  else
    hs.message = message(ready, status.phase or "Waiting for the projectgen operator")
  end
end
return hs
