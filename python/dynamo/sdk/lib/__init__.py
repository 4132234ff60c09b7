"""The module paths of NVIDIA Dynamo 0.1-0.3's SDK (``dynamo.sdk.lib.config``,
``.decorators``, ``.dependency``), so code written for it imports unchanged.
Each re-exports the one implementation in ``dynamo.sdk``."""
