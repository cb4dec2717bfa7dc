from scratch_rnn.cli import main

raise SystemExit(main())
