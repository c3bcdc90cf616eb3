"""The maintenance window: drain, prove, fence, the certificate and its audit, rollback, backup."""
