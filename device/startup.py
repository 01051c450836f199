"""What ``main.py`` does once at power-on before the agent runs: join the network, import the
application. Its own module so that ``main.py`` can drop it after (``fota.drop("startup")``):
on MicroPython a loaded module's code stays in the heap.
"""

import sys
import time


def wifi(config, tries=100):
    """Join ``wifi_ssid`` with ``wifi_key`` (bounded: ``tries`` x 200 ms); the WLAN, or None
    when the port has no ``network`` module (unix) or the config names no network."""
    try:
        import network
    except ImportError:
        return None
    if not config.get("wifi_ssid") or not hasattr(network, "WLAN"):
        return None
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(config["wifi_ssid"], config.get("wifi_key", ""))
        for _ in range(tries):
            if wlan.isconnected():
                break
            time.sleep_ms(200)
    return wlan


def start_app(config, slots):
    """Import the application (module ``app``, or the config's ``app``) and return it, or None
    when it fails to import (its self-test then fails: a new image is rolled back).

    With file slots holding bundles the running slot's directory goes first on ``sys.path``:
    the app's modules load from flash as any module does, never read whole into RAM. Otherwise
    the app is whatever ``import`` finds (frozen into the firmware, or on the filesystem).
    """
    if getattr(slots, "bundles", False):
        sys.path.insert(0, slots.app_dir(slots.running()))
    try:
        return __import__(config.get("app", "app"))
    except Exception as e:  # a broken application must not keep the agent from rolling back
        print("fota: the app did not start:", repr(e))
        return None
