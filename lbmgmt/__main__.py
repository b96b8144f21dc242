from lbmgmt.cli import main

raise SystemExit(main())
