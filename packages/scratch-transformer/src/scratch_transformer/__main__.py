from scratch_transformer.cli import main

raise SystemExit(main())
