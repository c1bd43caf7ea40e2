"""Failures a caller can act on; endpoints map each to its HTTP status."""


class RegistryError(Exception):
    status_code = 400


class NotFound(RegistryError):
    status_code = 404


class Conflict(RegistryError):
    status_code = 409


class InvalidRequest(RegistryError):
    status_code = 400


class PayloadTooLarge(RegistryError):
    status_code = 413


class UnsupportedMediaType(RegistryError):
    status_code = 415
