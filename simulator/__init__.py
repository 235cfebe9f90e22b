"""A Bedrock Runtime simulator speaking the real wire format (`costkeeper simulate`).

Entry point: `simulator.app.create_simulator(config) -> Starlette app`.
"""
