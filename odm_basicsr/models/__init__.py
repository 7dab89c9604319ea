from odm_basicsr.utils.scan import import_registered_modules

_modules = import_registered_modules(__name__, __file__, 'model')
