"""Names the installation's certificates carry, in a module without dependencies.

The agent's settings (imported by the init container, whose interpreter may lack
`cryptography`) need the controller's name as a default, so it cannot live in `pki`.
"""

CONTROLLER_CN = "customer-friendly-controller"
"""The common name of the controller's client certificate: the only client the agents accept."""
