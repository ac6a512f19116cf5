import sys

from observe_rt.grafana.check import main

sys.exit(main())
