"""The Rapid7 Log Search client, usable without the SDK.

One job per module:

* ``http``: the session, the ``X-Api-Key``, retries, redaction and the errors users see;
* ``budget``: the rate-limit gate shared by every thread of one API key;
* ``query``: the asynchronous protocol (start, poll ``Self``, follow ``Next``, ``count``) and
  what counts as a finished page;
* ``window_reader``: one window exactly (from-reading, identity dedupe, restarts, page logs);
* ``records``: an event as a record, and that record's schema, side by side;
* ``event_time``: the event's own time, taken from its message;
* ``client``: the facade that builds the pieces from the tap's settings.
"""

from tap_rapid7.logsearch.client import REGIONS, LogSearchClient
from tap_rapid7.logsearch.http import InvalidPageError, QueryRejectedError, QueryRestartNeeded
from tap_rapid7.logsearch.query import Page
from tap_rapid7.logsearch.window_reader import WindowReport

__all__ = [
    "REGIONS",
    "InvalidPageError",
    "LogSearchClient",
    "Page",
    "QueryRejectedError",
    "QueryRestartNeeded",
    "WindowReport",
]
