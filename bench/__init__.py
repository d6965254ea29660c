"""Benchmarks of Setu's media relay and join latency; see ``docs/performance.md``.

``python -m bench.relay`` compares the server CPU that Setu's encoded relay and a stock aiortc
relay (decode and re-encode) spend on the same consultations; ``python -m bench.join`` measures
how long a consultation takes from the doctor's ``call_next`` to decoded video on both sides.
"""
