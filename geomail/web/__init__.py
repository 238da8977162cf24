"""The public web site: ACME http-01 challenges, the MTA-STS policy, client autoconfiguration."""
