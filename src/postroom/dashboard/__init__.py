"""The dashboard: the post room in a browser, served by the API's server under
/dashboard/ while an admin exists (``postroom admin add NAME``).

Server-rendered pages (Jinja2, autoescaped) with a few lines of script of its own and
nothing fetched from anywhere else; ``web`` holds sessions, CSRF and the security
headers, ``pages`` what is read, ``actions`` what is changed (each logged in the audit
log), ``content`` a message's own bytes (the sandboxed HTML preview, .eml, attachments).
"""

from postroom.dashboard.deps import DashboardDeps
from postroom.dashboard.key import dashboard_key
from postroom.dashboard.mount import Dashboard

# ``create_dashboard`` (dashboard/app.py) builds the app itself; ``Dashboard`` builds it
# on the first request, so importing this package loads none of the pages.
__all__ = ["Dashboard", "DashboardDeps", "dashboard_key"]
