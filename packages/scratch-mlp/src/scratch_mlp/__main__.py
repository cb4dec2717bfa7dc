from scratch_mlp.cli import main

raise SystemExit(main())
