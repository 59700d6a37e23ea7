"""A local, deterministic Rapid7 Log Search API emulator for tests, demos and benchmarks.

    from logsearch_emulator import EmulatorOptions, running_emulator
    with running_emulator(EmulatorOptions(seed=7), port=0) as emu:
        emu.base_url, emu.api_key, emu.log_ids, emu.truth(from_ms, to_ms)

`truth()` keys are (log_id, timestamp, sequence_number_str): Rapid7 identifies an entry by all
three, and sequence numbers may recur across milliseconds (`sequence_numbers="per_ms"`).
"""

from logsearch_emulator.options import EmulatorOptions
from logsearch_emulator.server import RunningEmulator, running_emulator

__all__ = ["EmulatorOptions", "RunningEmulator", "running_emulator"]
