"""Public keys made with ssh-keygen for these tests (private halves discarded)."""

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V alice@workstation"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLz5Mu8Q/lSp05zn+e"
    "YDr3HhBjbQ9KATXnD5VNzIMCxTAzkyifQJJHtfOx+SOnDyExjzXzq1cO3bs/GZBNC6Vh8= root@vm"
)
RSA_2048 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5blG3AUlXW3QLMNj//qYpEjQMDBxtsXVYKOUX5G8mGTtFZKtKeX"
    "CoU/I/n9oSYMXnOxfQf505CEl9w/45pNQnEojoWuJNrpZs1bBpLl7RpB0j32ZeKCoCA66GsEHQLWJ+3W48VZXEUP9+"
    "GS0a4hwxtH089SLGcalZPJgb4NqHyno5x1wRPq39Uv4XWYueKUh7OMMUjeMb6a1JOlw1ZnTqH6+AgkyLRQbpnJDvet"
    "Zh6lQUIJPMtJefCarwK1EH6A/2spsd+ZEEbWZojEvwOQthraQxGPmtrxvpPnMgqfIRM4Hz8wZcXx25/l3t6En/KUfT"
    "rMsQeAyU4EYYMuUM7r5J rsa2048"
)
RSA_3072 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCsR/tDC4WQBwayfWa3EXvrN/6JQ113bfUL2CmYBxYxemj9or9tTq"
    "EI92/3z9/pUB6uF4BNp/A6Tn/J4aX67YNRpI9gZyHLkmPBmVLBFdyNJ0UbCV6sZdq+0yf17Kb7y4IuPm6bmF9YpaXV"
    "Q0l4xITwUNIJWl5qI82qfOVwHnKsfPs8HF5WSd9/SjHMLnph63gp4JkgLXD41f5kCgXg5QRI+AG76Q8Ow8YLYZ2KAa"
    "s3ZZpBPP9c883B4u6wyXYD+tS/zl+lluVzJ0PaU8VCax6Bgoeiudoq+b7+LViLpxHYJac6K8CVJAYsDXFbkR+EJfiF"
    "ElHpMuG28hpQXzMrCQNUHZZJcVczUO5oIEi+1Tm02qKA8Cc0QnnSLb8chHqLfimMkfCJHbTgO1MyfUP4dnhxhfvIhO"
    "Ay9grJkUlv1tl3k7w7Oeay9IT8OYZ0NxKpF6lajcH2Cx3QDFvJLy40X87vDvlGZPTaGixkfDm0briVhs9nMQF3+TsV"
    "6mhXsiVBSAs= rsa3072"
)
DSA = (
    "ssh-dss AAAAB3NzaC1kc3MAAACBAK8GXAK2UroATpIeuG2WipMKaESwqnbv4PnZS35iVNX0+zHSRb+e48vEZOc/3Q"
    "Wgxcd/H1+WmGyCEpPZMU7Cm5VjYhM+eL9svuFyHOtzZMxyJHSllOx1UuqIO6nZ2UNyeaD7kHvC/OK3TCBul4zuonBC"
    "Zcb+/DTvPRMg3ksMZImnAAAAFQCFkB8ZmfJjloM6ag4uhD1rJJcBLwAAAIAwEq1ojHUZxevdYxN2jj0w+8FjI60P8v"
    "YGeIUOJgkQnpJsSSiMxgpN1OGq9OSR80OC9pEaC5Y2QSXolxYWmpvFBC6zasj7MMKs04wWjf5ftF9ogHY76kt/r16t"
    "9GPkG8GaCXTlrNvMsw6f55hk/9trL3aJI9PzMpj7bDYobwbHwAAAAIBggP5TJMSstDmfIlK7+ZG4Bt0YhdN9apb0xj"
    "CDrAbLloo6/OLEiW6kMnn/9NhS7hKfUV76pND+IG/p1L7Qzhezdl3gnDHgZd1SuUfLcZkj3MQAVoKb8gPcmctU+iFE"
    "OKhoq/YXWtdXWLjzGokBemqQCh43J/3csMjqNUUqGpAjJg== root@vm"
)
PRIVATE_KEY_START = "-----BEGIN OPENSSH PRIVATE KEY-----"
# Security-key (FIDO) keys: the ED25519 and ECDSA keys above with an application of "ssh:".
SK_ED25519 = (
    "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAICz5ewroQEj/vw7OrTFRV8"
    "xC+4Ut/lU8JEiutJcRUi6VAAAABHNzaDo= alice@yubikey"
)
SK_ECDSA = (
    "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20AAAAIbm"
    "lzdHAyNTYAAABBBLz5Mu8Q/lSp05zn+eYDr3HhBjbQ9KATXnD5VNzIMCxTAzkyifQJJHtfOx+SOnDyExjzXzq1cO3bs/"
    "GZBNC6Vh8AAAAEc3NoOg== alice@yubikey"
)
