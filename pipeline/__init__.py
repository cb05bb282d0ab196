"""waybill-pipeline: courier and order events pushed in real time, daily statistics kept right."""
