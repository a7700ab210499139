from projectgen.cli import main

raise SystemExit(main())
