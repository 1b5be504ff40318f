"""Per-tenant key hierarchy, field encryption, blind indexes, the audit log and privacy evidence.

Features encrypt with `privacy.fields.FieldCipher`, decrypt personal data only through
`privacy.access` and the credentials the hub presents through `privacy.credentials`, find
callers with `privacy.blind_index.blind_index` and record evidence with `privacy.audit.audit`.
"""
