"""Deploying a policy on a robot: the real-time loop (`deploy.run_deploy`), the Robot interface and its
UDP driver, the safety layer, the watchdog and a simulated robot server for tests."""
