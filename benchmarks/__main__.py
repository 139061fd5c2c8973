"""``python -m benchmarks``: run the benchmarks (see `benchmarks.run`)."""

from .run import main

raise SystemExit(main())
