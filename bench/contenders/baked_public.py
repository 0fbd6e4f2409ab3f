"""Not a contender: the baked service with GET /users and /users/:id made public, so that the difference
in instructions to the baked service as shipped is what its sign-in check costs (signin.py)."""

from heaven_service import users
from heaven_service.app import create_app
from heaven_service.settings import Settings

# Before create_app registers them: the guard asks each handler once, at registration.
users.list_users.public = users.get_user.public = True
app = create_app(Settings.from_env())
