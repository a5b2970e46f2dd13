from rulelab.cli import main

raise SystemExit(main())
