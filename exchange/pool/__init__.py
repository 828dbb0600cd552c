"""Pool administration rules: patent numbers, the patent lifecycle, assessments, mints, royalties.

Pure modules: values in, values out; no I/O, no clock (callers pass ``at`` or
``today``), integers for money. Services and routes call them:

* ``patent_numbers``: publication numbers validated and normalised to DOCDB form.
* ``patents``: proposed → under_assessment → in_pool → retired (or rejected).
* ``assessments``: expert scores and the admission policy.
* ``contributions``: the published BPC mint policy and its idempotency key.
* ``royalties``: a period's distribution among contributors, and statements.
"""
