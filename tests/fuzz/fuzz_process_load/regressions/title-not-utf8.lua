return process { name = 'p', title = 'bad \xff title', run = function(visit) end }
