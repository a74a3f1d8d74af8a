from tests.fakes.livechat import *  # noqa: F403  (temporary: moving)
