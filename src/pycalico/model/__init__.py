"""Calico's ``projectcalico.org/v3`` data model: resources, validation, selectors, codecs. Pure."""
