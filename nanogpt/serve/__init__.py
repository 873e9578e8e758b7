"""Serving: Classifier.predict, the micro-batcher and the HTTP service. Its import path (predict) holds
no pandas, scikit-learn, scipy or datasets, so a service starts fast. Uses the parts below it."""
