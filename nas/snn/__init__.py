"""nas.snn"""
