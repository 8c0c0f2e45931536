return process {
  name = 'p', title = 'P',
  run = function(visit)
    visit:step { id = 's', title = 'S', fields = { field.text { name = 'a', label = 'bad \xff label' } } }
  end,
}
