"""`python -m lightsout ...`"""

import sys

from lightsout.cli import main

sys.exit(main())
