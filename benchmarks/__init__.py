"""The lab: benchmarks, profilers and checks that measure the product, beside it and not installed.

It imports the product (``models``, ``datasets``, ``engine``, ``cli``); nothing in the product
imports it. ``benchmarks/README.md`` lists each tool and the command that runs it.
"""
