-- No require or package.
-- phase: start
-- expect: unknown global 'require'
return process {
  name = "package-require", title = "Hostile: package_require",
  run = function(visit)
    require('os')
  end,
}
