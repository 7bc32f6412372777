"""The kernel under test: references (`default`, `debian:...`, `path:DIR`), fetching and preparing them,
and checking their config against what a scenario needs."""
