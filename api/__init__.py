"""HTTP API (Flask app factory and blueprints). Built in issue 5."""
