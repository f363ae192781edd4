-- pyriver 001 (down): no client liveness table; the rescuer falls back to job age.

DROP TABLE pyriver_client;
