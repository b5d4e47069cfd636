"""Pieces of the local stack that need no server."""

from pg2neo.devstack.neo4j import new_password


def test_generated_neo4j_passwords_are_never_taken_for_an_option() -> None:
    # neo4j-admin reads a password starting with "-" as an unknown option (token_urlsafe did that once in 64 runs).
    passwords = [new_password() for _ in range(2000)]
    assert all(p[0] != "-" and len(p) >= 32 and p.isalnum() for p in passwords)
    assert len(set(passwords)) == len(passwords)
