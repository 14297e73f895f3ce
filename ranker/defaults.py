"""The numbers several stages share a default for: retention (TTLs, stream caps) and sizes.

Each is written once, here, at the bottom of the layers: the module that owns the keys or the cache takes its
keyword default from here (``ranker.live.events``, ``ranker.live.state``, ``ranker.experiments.store``,
``ranker.retrieval``), and :class:`ranker.config.Settings` takes its field default from here, so ``config`` imports
no stage. Plain constants: importing this loads nothing.
"""

from __future__ import annotations

# --- the event log (ranker.live.events)
MAX_STREAM_LEN = 250_000  # a ranking with 100 candidates is about 8.3 KB in Redis: about 2 GB at this cap
MAX_STREAM_AGE_S = 30 * 24 * 3600
SERIES_TTL_S = 30 * 24 * 3600  # a day's reward series is kept this long after the day ends
RANKING_TTL_S = 24 * 3600  # how long a served ranking takes feedback
DEDUP_TTL_S = 7 * 24 * 3600  # how long an event_id is remembered

# --- users' state (ranker.live.state)
PROFILE_TTL_S = 90 * 24 * 3600  # a profile and activity counters expire this long after the user's last event
PSEUDONYM_TTL_S = 90 * 24 * 3600  # a pseudonym expires this long after the user's last request
SESSION_TTL_S = 30 * 60  # a session's state is kept this long after its last request or click

# --- experiments (ranker.experiments.store)
LOGS_TTL_S = 180 * 24 * 3600  # an experiment's exposure and outcome logs are kept this long after it ends

# --- retrieval
MIN_PAIRS = 200  # below this many (text, picture) items the ImageNet-label bridge serves (ranker.retrieval.bridge)
# What a category the query names adds to its items' fused score, in log-odds of a category match (the calibrated
# scale): e^3, about 20 times the odds. On an uncalibrated index it is converted at LOGITS_PER_COSINE
# (ranker.retrieval.fusion).
CATEGORY_BOOST = 3.0
QUERY_CACHE_SIZE = 4096  # query text embeddings kept per process by default (1.5 KiB each at 384-d)
