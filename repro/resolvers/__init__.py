"""Resolvers turn an EnvSpec into a PlatformLock: every stated and transitive package, one file each."""
