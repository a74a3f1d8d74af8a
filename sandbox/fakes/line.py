from tests.fakes.line import *  # noqa: F403  (temporary: moving)
