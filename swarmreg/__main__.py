from swarmreg.cli import main

raise SystemExit(main())
