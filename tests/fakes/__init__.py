"""Local stand-ins for remote services (Dataverse, KFP API) used by the tests."""
