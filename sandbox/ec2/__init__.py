"""The EC2 sandbox: moto's EC2 server plus a Windows-guest and AWS-timing simulator.

Entry point: ``sandbox/ec2_sandbox.py``.  Modules:

* ``config``  - the sandbox configuration (defaults, deep merge, validation)
* ``events``  - the scheduler thread and the transition log
* ``sim``     - the hooks into moto's EC2 models (the guest simulator)
* ``console`` - the guest's serial console text (GetConsoleOutput)
* ``paging``  - EC2's MaxResults / NextToken for the Describe calls moto does not page
* ``seed``    - seed-image fix-ups, run-time seed images, generated Windows images
* ``faults``  - request counting and fault injection (WSGI middleware)
* ``app``     - the WSGI application: control API + faults + moto
* ``state``   - the JSON state dump

Nothing here may import moto's EC2 module before ``ec2_sandbox.py`` has set
``MOTO_AMIS_PATH`` and the validation switches: ``config`` and ``events`` do
not import moto at all; the other modules do.
"""
