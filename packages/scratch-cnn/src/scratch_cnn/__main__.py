from scratch_cnn.cli import main

raise SystemExit(main())
