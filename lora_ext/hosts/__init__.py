"""Hosts: the code that connects the engine to a program that runs models (A1111, diffusers pipelines)."""
