"""ETUDE on Pulumi: `pulumi up -s dev` builds the shared platform, `pulumi up -s <use-case>` runs an experiment.

Reads and validates the whole stack config first (an invalid value fails here, naming the key, before any
resource), then declares the resources (`etude.infra.program.build`) and exports the results as stack outputs.
This side never imports torch, numpy or the serving/loadgen/models packages (docs/design.md, "Two sides, one seam").
"""

import pulumi

from etude.infra.config import config_from_pulumi, read_config
from etude.infra.program import build, gcp_settings
from etude.spec import SpecError

try:
    stack_config = read_config(pulumi.get_stack(), config_from_pulumi())
    gcp_config = pulumi.Config("gcp")
    gcp = gcp_settings(stack_config, gcp_config.get("project"), gcp_config.get("region"))
except SpecError as err:
    raise pulumi.RunError(str(err)) from None

for key, value in build(stack_config, gcp).items():
    pulumi.export(key, value)
