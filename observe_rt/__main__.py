from observe_rt.cli import main

raise SystemExit(main())
