"""The dashboard: the post room in a browser, served by the API's server under
/dashboard/ while an admin exists (``postroom admin add NAME``).

Server-rendered pages (Jinja2, autoescaped) with a few lines of script of its own and
nothing fetched from anywhere else; ``web`` holds sessions, CSRF and the security
headers, ``pages`` what is read, ``actions`` what is changed (each logged in the audit
log), ``content`` a message's own bytes (the sandboxed HTML preview, .eml, attachments).
"""

from postroom.dashboard.app import create_dashboard
from postroom.dashboard.deps import DashboardDeps
from postroom.dashboard.key import dashboard_key

__all__ = ["DashboardDeps", "create_dashboard", "dashboard_key"]
