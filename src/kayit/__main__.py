from kayit.cli import main

raise SystemExit(main())
