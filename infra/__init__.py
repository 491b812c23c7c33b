"""Infrastructure: terraform/ (AWS, two regions) and local/ (the local two-region drill)."""
