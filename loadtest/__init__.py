"""Locust load tests for the gateway (or any OpenAI-compatible server): `locust -f loadtest`.

users.py is the locustfile (Users, the load shape, event listeners); the other modules are
plain helpers that Locust also imports, harmlessly, because it loads every .py file here.
"""
